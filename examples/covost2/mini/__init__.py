"""The mini recipe's own code (examples/covost2/run.sh puts examples/covost2 on PYTHONPATH and runs these
modules with ``python -m mini.<module>``): the offline corpus builder (``corpus``, with ``catalogs``,
``debian``, ``split``, ``speech``), stage-1 text (``text``), the Whisper-base fetcher (``fetch_whisper``)
and the language blocks grafted from Whisper's decoder (``whisper_text``). Only this recipe needs them,
so they live here, not in the ``comsl`` package, which never imports them."""
