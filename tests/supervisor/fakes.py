"""A pool's instances as records, for the instance refresh and the reload without processes."""

from __future__ import annotations

import itertools

from surge.supervisor.refresh import InstanceStatus


class FakeFleet:
    """Instances as records; a launched one turns healthy after ``boot_polls`` looks unless
    its settings' command is in ``broken`` (then it exits at once)."""

    def __init__(self, settings, count, *, boot_polls=2, broken=()):
        self.stopping = False
        self.boot_polls = boot_polls
        self.broken = set(broken)
        self.instances = {}
        self.held = []
        self.desired = count
        self.events = []
        self.most_in_service = 0
        self.fewest_serving = count
        self._numbers = itertools.count(1)
        for _ in range(count):
            name = self.launch_instance("web", settings)
            self.instances[name].update(serving=True, boot=0)
        self.events.clear()

    def pool_instances(self, pool):
        for record in self.instances.values():
            if record["leaving"]:
                record["drain"] -= 1
        for name in [n for n, r in self.instances.items() if r["leaving"] and r["drain"] <= 0]:
            del self.instances[name]
            self.events.append(("gone", name))
        for record in self.instances.values():
            if not record["serving"] and not record["leaving"] and not record["exited"]:
                record["boot"] -= 1
                if record["settings"].command in self.broken:
                    record["exited"] = True
                elif record["boot"] <= 0:
                    record["serving"] = True
        staying = [r for r in self.instances.values() if not r["leaving"]]
        self.most_in_service = max(self.most_in_service, len(staying))
        self.fewest_serving = min(self.fewest_serving, sum(r["serving"] for r in staying))
        return [InstanceStatus(name, r["settings"], r["serving"] and not r["leaving"],
                               r["leaving"], r["exited"], 1 if r["exited"] else None)
                for name, r in self.instances.items()]

    def desired_instances(self, pool):
        return self.desired

    def launch_instance(self, pool, settings):
        name = f"web-{next(self._numbers)}"
        self.instances[name] = {"settings": settings, "serving": False, "leaving": False,
                                "exited": False, "boot": self.boot_polls, "drain": 3}
        self.events.append(("launch", name, settings.command))
        return name

    def retire_instance(self, name):
        self.instances[name]["leaving"] = True
        self.events.append(("retire", name))

    def hold_pool(self, pool, held):
        self.held.append(held)


class FakeReloadHost(FakeFleet):
    """A supervisor as a reload sees it: settings it may only change through
    ``apply_settings``, groups it resizes and replaces on request."""

    def __init__(self, settings, config_path, **fleet):
        super().__init__(settings.pools["web"], settings.pools["web"].instances.desired,
                         **fleet)
        self._settings = settings
        self.config_path = str(config_path)
        self.log = RecordingLog()
        self.applied = []
        self.resized = []
        self.replaced = []

    @property
    def settings(self):
        return self._settings

    def apply_settings(self, settings):
        self.applied.append(settings)
        self._settings = settings

    def resize(self, kind, group, desired):
        self.resized.append((str(kind), group, desired))
        if str(kind) == "pool":
            self.desired = desired

    async def replace_group(self, kind, group):
        self.replaced.append((str(kind), group))


class RecordingLog:
    def __init__(self):
        self.events = []

    def event(self, event, level="info", **fields):
        self.events.append((event, level, fields))
