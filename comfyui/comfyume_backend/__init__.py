"""ComfyUME's backend extension for ComfyUI: what a gateway must ask the
GPU server because only the server can run a node's Python.

Install by copying this folder into ComfyUI's `custom_nodes/` (the worker
image does). It adds no nodes and changes nothing ComfyUI does; it adds
two routes, also under `/api` like every ComfyUI route:

- `GET /comfyume/v1/validators`: for every node class, the signature of its
  `VALIDATE_INPUTS` (`validate_inputs` for V3 nodes), or null when it has
  none. The signature decides which of ComfyUI's own checks are switched
  off (the inputs it names, every input with `**kwargs`, link types with
  `input_types`), so the gateway can make exactly the others itself.
- `POST /comfyume/v1/validate_inputs`: runs those functions for the nodes of
  a prompt, as `execution.validate_inputs` would at that point, and answers
  each call with the errors ComfyUI would add (possibly none) or the
  exception it would raise. Nothing is queued or executed.

The code in `_run` follows the tail of `validate_inputs` in ComfyUI's
execution.py (v0.33.0) line for line; keep the two in step.
"""

import inspect
import logging
import sys
import traceback
import uuid

from aiohttp import web

import execution
import nodes
from server import PromptServer
from comfy_api.internal import _ComfyNodeInternal, first_real_override
from comfy_execution.graph import ExecutionBlocker

API_VERSION = 1
# A prompt has at most one call per node; the gateway bounds prompts far
# below this.
MAX_CALLS = 10_000

NODE_CLASS_MAPPINGS = {}


def _validator(obj_class):
    """The validation function and its name, as `validate_inputs` finds them."""
    if issubclass(obj_class, _ComfyNodeInternal):
        return first_real_override(obj_class, "validate_inputs"), "validate_inputs"
    return getattr(obj_class, "VALIDATE_INPUTS", None), "VALIDATE_INPUTS"


def _signature(obj_class):
    function, _ = _validator(obj_class)
    if function is None:
        return None
    argspec = inspect.getfullargspec(function)
    return {"args": list(argspec.args), "varkw": argspec.varkw is not None}


def _signatures():
    classes = {}
    for name, obj_class in nodes.NODE_CLASS_MAPPINGS.items():
        try:
            classes[name] = _signature(obj_class)
        except Exception as ex:  # a class that cannot be inspected: the gateway leaves it to us
            logging.warning("comfyume: cannot read the validator of %s: %s", name, ex)
    return classes


def _raised(ex, tb):
    return {
        "exception": {
            "type": execution.full_type_name(type(ex)),
            "message": str(ex),
            "traceback": traceback.format_tb(tb),
        }
    }


async def _run(prompt_id, call):
    """One node's validation function, called as `validate_inputs` calls it:
    `inputs` are the node's inputs after ComfyUI's conversions, links as
    sent; `received_types` the types of its linked inputs."""
    unique_id = call["node_id"]
    inputs = call["inputs"]
    received_types = call.get("received_types") or {}
    obj_class = nodes.NODE_CLASS_MAPPINGS[call["class_type"]]
    validate_function, validate_function_name = _validator(obj_class)
    if validate_function is None:
        return {"errors": []}
    argspec = inspect.getfullargspec(validate_function)
    validate_function_inputs = argspec.args
    validate_has_kwargs = argspec.varkw is not None

    errors = []
    if len(validate_function_inputs) > 0 or validate_has_kwargs:
        input_data_all, _, v3_data = execution.get_input_data(inputs, obj_class, unique_id)
        input_filtered = {}
        for x in input_data_all:
            if x in validate_function_inputs or validate_has_kwargs:
                input_filtered[x] = input_data_all[x]
        if 'input_types' in validate_function_inputs:
            input_filtered['input_types'] = [received_types]

        ret = await execution._async_map_node_over_list(prompt_id, unique_id, obj_class, input_filtered, validate_function_name, v3_data=v3_data)
        ret = await execution.resolve_map_node_over_list_results(ret)
        for x in input_filtered:
            for i, r in enumerate(ret):
                if r is not True and not isinstance(r, ExecutionBlocker):
                    details = f"{x}"
                    if r is not False:
                        details += f" - {str(r)}"

                    error = {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": details,
                        "extra_info": {
                            "input_name": x,
                        }
                    }
                    errors.append(error)
                    continue
    return {"errors": errors}


def _bad_request(reason):
    return web.json_response({"error": reason}, status=400)


routes = PromptServer.instance.routes


@routes.get("/comfyume/v1/validators")
async def validators(request):
    return web.json_response({"version": API_VERSION, "classes": _signatures()})


@routes.post("/comfyume/v1/validate_inputs")
async def validate_inputs(request):
    try:
        body = await request.json()
    except ValueError as ex:
        return _bad_request(f"the body is not JSON: {ex}")
    calls = body.get("calls") if isinstance(body, dict) else None
    if not isinstance(calls, list) or len(calls) > MAX_CALLS:
        return _bad_request(f"expected {{\"calls\": [...]}} with at most {MAX_CALLS} calls")
    for call in calls:
        if not (isinstance(call, dict) and isinstance(call.get("node_id"), str)
                and isinstance(call.get("class_type"), str) and "inputs" in call
                and isinstance(call.get("received_types", {}), dict)):
            return _bad_request("each call needs node_id and class_type (strings), inputs, and received_types (an object)")
    prompt_id = body.get("prompt_id")
    if not isinstance(prompt_id, str):
        prompt_id = str(uuid.uuid4())
    verdicts = []
    for call in calls:
        try:
            verdicts.append(await _run(prompt_id, call))
        except Exception as ex:
            verdicts.append(_raised(ex, sys.exc_info()[2]))
    return web.json_response({"verdicts": verdicts})
