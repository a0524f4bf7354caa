"""Argument checks and error summaries shared across resattn.

Importing this module imports neither MXNet nor numpy: the command-line
parser and the data registry use it before either is needed.
"""
import numbers

__all__ = ["first_line", "check_int", "check_choice"]


def first_line(err, with_type=False):
    """The first line of an exception's message, or its type's name if it has none.

    With ``with_type``, ``'TypeName: first line'`` (still the bare name when the
    message is empty).
    """
    lines = str(err).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if not text:
        return type(err).__name__
    return "%s: %s" % (type(err).__name__, text) if with_type else text


def check_int(name, value, low, allow_none=False):
    """ValueError naming ``name`` unless ``value`` is an integer >= ``low`` (or allowed None).

    Python and numpy integers pass; ``bool`` (and numpy's) do not.
    """
    if value is None and allow_none:
        return
    # numpy's integers register as numbers.Integral; numpy.bool_ does not.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError("%s must be an integer >= %d%s, got %r"
                         % (name, low, " or None" if allow_none else "", value))


def check_choice(option, value, choices):
    """Raise ValueError ``--OPTION 'VALUE': expected one of ...`` unless ``value in choices``.

    For command-line options whose help lists the choices itself, checked when
    the command runs.

    Parameters
    ----------
    option : str
        The flag, e.g. ``'--format'``.
    value : str
    choices : tuple of str
    """
    if value not in choices:
        raise ValueError("%s %r: expected one of %s" % (option, value, ", ".join(choices)))
