"""Dataset sources: each turns its input into candidate clips for :mod:`pipelines.build`.

One module per source kind (``synthetic``, ``folder``, ``ave``, ``youtube_csv``), each with a
pydantic configuration model and a collect function returning :class:`pipelines.sources.base.Collected`;
:mod:`pipelines.sources.registry` lists them (``SOURCES``).
"""
