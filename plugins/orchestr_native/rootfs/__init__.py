"""The container's root filesystem: the overlay of the image's layers and everything mounted inside it."""
