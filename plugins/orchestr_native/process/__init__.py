"""Setting up a container's process: namespaces, user, capabilities, and the exec into it."""
