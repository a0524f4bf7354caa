"""Independent re-implementations of the foreign models and file formats that
:mod:`resattn.models.convert` reads, for the tests.

- :mod:`.seed_gluon`: the Gluon implementation (PistonY/ResidualAttentionNetwork)
  at both of its parameter namings (``ResidualAttentionModel_92_32input_update``
  of commit 6c48813, ``ResidualAttentionModel_32input`` of 8574060 onwards);
- :mod:`.pytorch_ref`: the PyTorch reference's
  ``ResidualAttentionModel_92_32input_update`` (tengshaofeng/ResidualAttentionNetwork-pytorch);
- :mod:`.legacy_torch`: a writer of torch's legacy (pre-1.6, non-zip)
  serialization as torch 0.3 / 0.4 wrote it, under Python 2 or 3;
- :mod:`.py2_torch_save`: a Python 2 script that writes the same files with
  Python 2's own ``cPickle`` and stand-ins for torch 0.3 / 0.4's objects, to
  check :mod:`.legacy_torch` byte for byte where a Python 2.7 interpreter exists.

They are written from reading those projects' code, not copied from it.
"""
