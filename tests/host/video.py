"""Read back what SaveVideo wrote, with PyAV (ComfyUI's own video dependency)."""

from fractions import Fraction


def probe_video(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        rate = stream.average_rate or stream.guessed_rate
        return {"frames": len(frames), "width": stream.width, "height": stream.height,
                "fps": float(Fraction(rate)) if rate else None, "arrays": frames}
