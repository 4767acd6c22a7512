"""The plugin machinery: the hook specifications (:mod:`.hookspecs`), the registry of built-in
and installed plugins (:mod:`.registry`) and the pairing rule between repulsors and attractors
(:mod:`.pairing`). The classes a plugin subclasses are the plugin API, :mod:`protoreg.plugin_api`."""
