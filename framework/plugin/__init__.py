"""The plugin API: hook specification, plugin manager, one dispatch path, parameter
validation, loss and callback base classes, and plugin specs."""
