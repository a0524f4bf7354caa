"""What the data modules share and the registry may use without importing MXNet."""

#: The geometric styles of :class:`~resattn.data.transforms.Preprocess`.
STYLES = ("small", "imagenet", "fixed")
