"""The gateway's own routes (health, tasks, static, enqueue) and the router choosing among
them and the proxy."""
