"""Input mergers: how a chained work's input is built from its own input and its
prerequisites' outputs (semantics 20), and the name of the combine step's worker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Final, Protocol

from .errors import InvalidRequestError

if TYPE_CHECKING:
    from .data import Data, JSONValue


class InputMerger(Protocol):
    """Merges ``[own input] + outputs of direct prerequisites`` into one input."""

    #: The name persisted with the work (the merger is looked up by it, never imported).
    name: ClassVar[str]

    @staticmethod
    def merge(inputs: Sequence[Data]) -> Data:
        """Merge the data objects, earliest first."""
        ...


class OverwritingInputMerger:
    """The default merger: later keys win, so a prerequisite's output overrides the
    work's own input for the same key."""

    name: ClassVar[str] = "overwriting"

    @staticmethod
    def merge(inputs: Sequence[Data]) -> Data:
        """Merge by overwriting keys in order."""
        out: dict[str, JSONValue] = {}
        for data in inputs:
            out.update(data)
        return out


class ArrayCreatingInputMerger:
    """Every value becomes a list; lists concatenate, scalars join a list. Two values of
    different JSON types under one key fail the merge (and so the work)."""

    name: ClassVar[str] = "array_creating"

    @staticmethod
    def merge(inputs: Sequence[Data]) -> Data:
        """Merge into lists per key."""
        out: dict[str, list[JSONValue]] = {}
        kinds: dict[str, type] = {}
        for data in inputs:
            for key, value in data.items():
                items = list(value) if isinstance(value, list) else [value]
                for item in items:
                    kind = _json_kind(item)
                    seen = kinds.setdefault(key, kind)
                    if seen is not kind:
                        raise InvalidRequestError(
                            f"input[{key!r}]",
                            item,
                            f"ArrayCreatingInputMerger cannot mix {seen.__name__} and "
                            f"{kind.__name__} values",
                        )
                out.setdefault(key, []).extend(items)
        return out


def _json_kind(value: object) -> type:
    if value is None:
        return type(None)
    if isinstance(value, bool):
        return bool
    if isinstance(value, int | float):
        return float
    if isinstance(value, str):
        return str
    if isinstance(value, Mapping):
        return dict
    return list


#: Mergers by persisted name.
MERGERS: Final[Mapping[str, type[InputMerger]]] = {
    OverwritingInputMerger.name: OverwritingInputMerger,
    ArrayCreatingInputMerger.name: ArrayCreatingInputMerger,
}


#: The built-in worker of :meth:`WorkContinuation.combine`'s pass-through step.
COMBINE_WORKER: Final = "wm_async.combine"
