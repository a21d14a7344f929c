"""The base layer: errors, atomic files, locks, the registry class, plugins, the published figures and
the other small pieces every layer above may use. Imports nothing of the package above it."""
