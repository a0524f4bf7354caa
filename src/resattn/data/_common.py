"""What the data modules share and the registry may use without importing MXNet."""
import numpy as np

#: The geometric styles of :class:`~resattn.data.transforms.Preprocess`.
STYLES = ("small", "imagenet", "fixed")


def check_int(name, value, low, allow_none=False):
    """ValueError naming ``name`` unless ``value`` is an integer >= ``low`` (or allowed None)."""
    if value is None and allow_none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low:
        raise ValueError("%s must be an integer >= %d%s, got %r"
                         % (name, low, " or None" if allow_none else "", value))
