"""A per-task command handler for the tests: behaviour chosen by payload["mode"]."""

import json
import os
import sys
import time

payload = json.load(sys.stdin)
mode = payload.get("mode")
sys.stderr.write(f"working on {mode}\n")
if mode == "sleep":
    with open(payload["pid_file"], "w") as pid_file:
        pid_file.write(str(os.getpid()))
    time.sleep(60)
elif mode == "fail":
    sys.exit(3)
elif mode == "permanent":
    sys.exit(100)
elif mode == "garbage":
    print("this is not json")
elif mode == "empty":
    pass
else:
    print(json.dumps({"got": payload, "task": os.environ["SURGE_TASK"],
                      "id": os.environ["SURGE_TASK_ID"], "attempt": os.environ["SURGE_ATTEMPT"]}))
