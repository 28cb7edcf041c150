"""Map requests: which attention maps a plugin needs beyond the run's default maps.

Every loss reads the run's default maps (``maps: [tokens, H, W]``, the engine's capture
setting). A plugin that needs more - cross-attention at other resolutions (Divide-and-Bind's
64 and 32 layers), self-attention (InitNO) - declares ``MapRequest`` s; the capture then records
exactly what the run's plugins asked for, nothing when nobody asks, and each image's requested
maps reach the plugin as ``ctx.extra_maps[request]``. A request the model cannot serve is an
error naming the plugin and what the model has, before the first step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError

if TYPE_CHECKING:
    from .attention import AttentionStore

MapKind = Literal["cross", "self"]


@dataclass(frozen=True)
class MapRequest:
    """Maps a plugin needs.

    Attributes:
        kind: ``"cross"`` - image->text probabilities, read as ``[tokens, H, W]`` (each pixel
            sums to 1 over tokens); ``"self"`` - image->image probabilities of the UNet's
            ``attn1`` layers, read as ``[H * W, H, W]`` (row ``q`` is query pixel ``q``'s
            attention over the key pixels, summing to 1).
        resolution: keep the layers whose grid side is this at the run's image size.
        layers: or name processors (``...attn2.processor`` / ``...attn1.processor``).
        every: or every layer of the kind (what modulation plugins usually want).
    """

    kind: MapKind = "cross"
    resolution: int | None = None
    layers: tuple[str, ...] | None = None
    every: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("cross", "self"):
            raise ConfigError(f"map request kind must be 'cross' or 'self', got {self.kind!r}")
        if self.resolution is None and not self.layers and not self.every:
            raise ConfigError("a map request needs a resolution, layer names or every=True")

    def describe(self) -> str:
        if self.every:
            return f"every {self.kind}-attention layer"
        where = f"{self.resolution}x{self.resolution}" if self.resolution is not None else ", ".join(self.layers or ())
        return f"{self.kind}-attention maps at {where}"


def unet_grids(unet: Any, latent_size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """The grid ``(h, w)`` of every attention processor of a UNet at a latent size: the blocks
    of level ``i`` work at ``latent / 2**i`` (down blocks ``i``, up blocks ``levels - 1 - i``,
    the mid block at the lowest level)."""
    levels = len(unet.config.block_out_channels)
    height, width = latent_size
    grids = {}
    for name in unet.attn_processors:
        head, _, rest = name.partition(".")
        if head == "mid_block":
            level = levels - 1
        elif head in ("down_blocks", "up_blocks"):
            index = int(rest.split(".", 1)[0])
            level = index if head == "down_blocks" else levels - 1 - index
        else:
            continue
        scale = 2**level
        grids[name] = (-(-height // scale), -(-width // scale))
    return grids


def selected_layers(request: MapRequest, grids: dict[str, tuple[int, int]]) -> list[str]:
    """The processors ``request`` selects among ``grids`` (a UNet's, from ``unet_grids``)."""
    suffix = "attn2.processor" if request.kind == "cross" else "attn1.processor"
    names = [n for n in grids if n.endswith(suffix)]
    if request.layers:
        names = [n for n in names if n in request.layers]
    if request.resolution is not None:
        names = [n for n in names if grids[n] == (request.resolution, request.resolution)]
    return names


def check_requests(requests: Iterable[tuple[str, MapRequest]], family: str, denoiser: Any,
                   latent_size: tuple[int, int]) -> None:
    """A ``ConfigError`` naming the plugin, the request and what the model has, for the first
    request the model cannot serve at ``latent_size``."""
    for plugin, request in requests:
        if family not in ("sd", "sdxl"):
            raise ConfigError(
                f"plugin {plugin!r} asks for {request.describe()}, but extra map requests need a UNet "
                f"(SD 1.x/2.x, SDXL); this is a {family} model whose losses read the default joint-attention maps"
            )
        grids = unet_grids(denoiser, latent_size)
        if selected_layers(request, grids):
            continue
        suffix = "attn2.processor" if request.kind == "cross" else "attn1.processor"
        sides = sorted({grids[n][0] for n in grids if n.endswith(suffix)}, reverse=True)
        unknown = [n for n in request.layers or () if n not in grids or not n.endswith(suffix)]
        detail = (f"no {request.kind}-attention layer named {', '.join(map(repr, unknown))}" if unknown
                  else f"no {request.kind}-attention layer at that size")
        raise ConfigError(
            f"plugin {plugin!r} asks for {request.describe()}: the model has {detail} at this image size; "
            f"its {request.kind}-attention grids are {', '.join(f'{s}x{s}' for s in sides)}"
        )


def requests_of(plugins: Sequence[Any], method: str = "map_requests") -> list[tuple[str, MapRequest]]:
    """``(plugin name, request)`` for every distinct request of ``plugins`` (their
    ``map_requests()``, or ``modulated_layers()`` with ``method``)."""
    out: list[tuple[str, MapRequest]] = []
    seen: set[MapRequest] = set()
    for plugin in plugins:
        ask = getattr(plugin, method, None)
        for request in ask() if callable(ask) else ():
            if request not in seen:
                seen.add(request)
                out.append((plugin.name, request))
    return out


def checked_grids(requests: list[tuple[str, MapRequest]], family: str, denoiser: Any,
                  latent: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """The denoiser's attention grids at ``latent`` size ``(h, w)``, after checking that
    ``requests`` can be served there (a ``ConfigError`` naming the plugin otherwise)."""
    check_requests(requests, family, denoiser, latent)
    return unet_grids(denoiser, latent)


def install_requests(store: AttentionStore, plugins: list[Any], family: str, denoiser: Any,
                     latent: tuple[int, int]) -> list[tuple[str, MapRequest]]:
    """One extra store per distinct map request of ``plugins`` (none when nobody asks); returns
    the ``(plugin name, request)`` pairs."""
    from .attention import AttentionStore  # torch: not at import, plugins import MapRequest without it

    requests = requests_of(plugins)
    if not requests:
        return []
    grids = checked_grids(requests, family, denoiser, latent)
    store.extras = {r: AttentionStore(None, selected_layers(r, grids), kind=r.kind) for _, r in requests}
    return requests
