"""One progress-bar factory for relax, MD and batches (tqdm, or a silent stand-in)."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0, unit: str = "step") -> tqdm:
    """A tqdm bar over ``total`` steps starting at ``initial``; ``enabled=False`` draws nothing.

    The disabled bar still accepts ``update``/``set_postfix``/``close``, so callers never branch.
    """
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        leave=True,
    )
