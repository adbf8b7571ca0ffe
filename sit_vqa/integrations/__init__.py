"""Plugins for other frameworks that load and ask sit-vqa models (each in its own subpackage; none of them is
imported by the rest of the package, and each framework is imported only by its own plugin's model module)."""
