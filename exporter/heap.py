"""Keep the garbage collector's full passes off what lives from one load to the next.

After a load the exporter holds hundreds of thousands of objects until the next reload: the checks, their
states and their rendered text. CPython's full collection walks every tracked object, and while it runs
no probe is timed and no scrape is answered (at 10,000 checks about 60 ms in a bare store, more in a
running exporter). ``settle()`` collects once, then freezes what is left, so later collections walk only
what was made since. A reload calls it again: the previous load's objects are thawed and anything the
reload dropped (reference cycles included) is collected in that one pass.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect once, then move every surviving object out of reach of later collections."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def release() -> None:
    """Make every object collectable again (a stopped exporter keeps nothing alive on purpose)."""
    gc.unfreeze()
