"""The delivery engine: storage, webhook registry, publishing and one trio actor per destination URL."""
