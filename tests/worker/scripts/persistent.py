"""A persistent (JSON lines) command handler for the tests: behaviour by payload["mode"]."""

import json
import os
import sys
import time

for line in sys.stdin:
    request = json.loads(line)
    payload = request["payload"]
    mode = payload.get("mode")
    if mode == "die":
        sys.exit(7)
    if mode == "sleep":
        with open(payload["pid_file"], "w") as pid_file:
            pid_file.write(str(os.getpid()))
        time.sleep(60)
    if mode == "garbage":
        print("hello from a chatty script", flush=True)
        continue
    if mode == "fail":
        response = {"id": request["id"], "ok": False, "error": "nope",
                    "permanent": payload.get("permanent", False)}
    else:
        sys.stderr.write(f"handled {request['id']}\n")
        sys.stderr.flush()
        response = {"id": request["id"], "ok": True,
                    "result": {"pid": os.getpid(), "task": request["task"], "payload": payload}}
    print(json.dumps(response), flush=True)
