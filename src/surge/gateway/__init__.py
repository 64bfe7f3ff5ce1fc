"""The gateway: holds client connections and routes requests to pools, queues and files."""
