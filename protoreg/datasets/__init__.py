"""The built-in datasets, one module each, registered like third-party ones through the
:class:`protoreg.Dataset` contract; a new dataset is one module here (or a plugin of its own)."""
