"""Ray at the edge: drivers, actors, job entry points and the ``geoxai`` command line.

Everything here only chains functions of the :mod:`geoxai` library.
"""
