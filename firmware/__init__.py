"""ttforge.firmware — see the open issues; not built yet."""

__all__: list[str] = []
