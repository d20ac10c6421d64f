"""Test nodes for ComfyUME's tests against a stock ComfyUI: each
`VALIDATE_INPUTS` variant that changes what ComfyUI itself checks, a node
with progress and previews, and a pack's frontend files, translations and
example workflow.

Loaded by a stock ComfyUI through an extra-paths file naming this folder's
parent as `custom_nodes` (scripts/test.sh does that). The gateway cannot run
this Python itself: these nodes show that it never refuses what ComfyUI
accepts, that with ComfyUME's backend extension it refuses at submit
exactly as ComfyUI does, and that without it ComfyUI's own refusals reach
the participant with the node and the reason.
"""


class _TestNode:
    """What every test node shares: its menu, and an IMAGE out of `run`."""

    CATEGORY = "comfyume/tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class _AmountNode(_TestNode):
    """An IMAGE passed through, and a FLOAT `amount` of at most 1.0."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "amount": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    def run(self, image, amount):
        return (image,)


class ComfyumeKwargsValidated(_AmountNode):
    """`VALIDATE_INPUTS(**kwargs)`: ComfyUI skips its own range checks for
    every input, so an `amount` of 5.0 (over `max`) runs."""

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs):
        return True


class ComfyumeNamedValidated(_AmountNode):
    """`VALIDATE_INPUTS(amount)`: ComfyUI skips its checks of `amount`
    only, and this code decides: a multiple of 0.25 (any size) passes."""

    @classmethod
    def VALIDATE_INPUTS(cls, amount):
        if (amount * 4) % 1 != 0:
            return f"amount must be a multiple of 0.25, not {amount}"
        return True


class ComfyumeFalseValidated(_AmountNode):
    """`VALIDATE_INPUTS(amount)` answering False (no reason) above 0.9:
    ComfyUI names only the input."""

    @classmethod
    def VALIDATE_INPUTS(cls, amount):
        return amount <= 0.9


class ComfyumeRaisingValidated(_AmountNode):
    """`VALIDATE_INPUTS(**kwargs)` that raises for a negative `amount`
    (ComfyUI reports the exception, blamed by the node linking to it) and
    refuses one over 0.5 (ComfyUI names every input it was given)."""

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs):
        if kwargs["amount"] < 0:
            raise ValueError(f"the test node cannot take {kwargs['amount']}")
        if kwargs["amount"] > 0.5:
            return "at most 0.5, says the test node"
        return True


class ComfyumeRaisingOutput(_TestNode):
    """An output node whose `VALIDATE_INPUTS` always raises: ComfyUI
    reports `exception_during_validation` for the output itself."""

    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, images):
        raise RuntimeError("the test output refuses to be validated")

    def run(self, images):
        return ()


class ComfyumePlain(_AmountNode):
    """No `VALIDATE_INPUTS`: ComfyUI makes all its own checks."""


class ComfyumeTypesValidated(_TestNode):
    """`VALIDATE_INPUTS(input_types)`: ComfyUI skips the type check of
    linked inputs, so a MASK may feed `image`; the node turns it into an
    image."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    def run(self, image):
        if image.dim() == 3:  # a MASK: batch, height, width
            image = image.unsqueeze(-1).repeat(1, 1, 1, 3)
        return (image,)


class ComfyumeSteps(_TestNode):
    """An IMAGE passed through after `steps` steps, each reported with
    progress and a preview of the image (previews are never throttled, so
    the frames are the same on every run), checking for an interrupt
    before each step and raising at step `fail_at` (0: never). `pause`
    seconds per step make a run long enough to interrupt."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "steps": ("INT", {"default": 3, "min": 1, "max": 1000}),
                "fail_at": ("INT", {"default": 0, "min": 0, "max": 1000}),
                "pause": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def run(self, image, steps, fail_at, pause, unique_id):
        import time

        import comfy.model_management
        import comfy.utils
        from PIL import Image

        pixels = (image[0].clamp(0, 1) * 255).byte().cpu().numpy()
        preview = Image.fromarray(pixels)
        bar = comfy.utils.ProgressBar(steps, node_id=unique_id)
        for step in range(1, steps + 1):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if pause:
                time.sleep(pause)
            bar.update_absolute(step, steps, ("PNG", preview, 64))
            if step == fail_at:
                raise RuntimeError(f"the test node failed at step {step}")
        return (image,)


# The pack's frontend extension (web/), translations (locales/) and
# example workflow (example_workflows/), which the gateway serves from the
# backend.
WEB_DIRECTORY = "./web"

NODE_CLASS_MAPPINGS = {
    "ComfyumeSteps": ComfyumeSteps,
    "ComfyumeFalseValidated": ComfyumeFalseValidated,
    "ComfyumePlain": ComfyumePlain,
    "ComfyumeRaisingOutput": ComfyumeRaisingOutput,
    "ComfyumeRaisingValidated": ComfyumeRaisingValidated,
    "ComfyumeKwargsValidated": ComfyumeKwargsValidated,
    "ComfyumeNamedValidated": ComfyumeNamedValidated,
    "ComfyumeTypesValidated": ComfyumeTypesValidated,
}
