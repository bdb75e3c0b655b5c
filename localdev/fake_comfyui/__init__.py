"""A FAKE ComfyUI: a stand-in for ComfyUI 0.33.0 used by the tests and the local demo. No models.

It speaks ComfyUI's HTTP + websocket API as recorded from a real 0.33.0 server
(``/work/shared/comfyui/PROTOCOL.md`` and ``captures/*.json``): the same message types, shapes and
order, the same validation error bodies, the same queue, cache, interrupt and reconnect behaviour. It
is written from those observations; no ComfyUI code is used. It really executes the model-free node
classes of ``workflows/model_free_still.json`` and ``workflows/model_free_chunked.json``; any other
``class_type`` is rejected with ``missing_node_type``, as a real server without that node would do.

Differences from a real server, on purpose: ``/system_stats`` reports ``comfyui_version
"0.33.0-fake"``; there is no frontend, no model folder and no preview decoding; and ``POST
/fake/fault`` injects faults.

| file            | what                                                                      |
|-----------------|---------------------------------------------------------------------------|
| ``server.py``   | the routes: HTTP and websocket                                            |
| ``validation.py`` | what ``POST /prompt`` checks, with the real error bodies                |
| ``catalogue.py``| the node classes, as ``workflows/object_info_pinned.json`` declares them   |
| ``execution.py``| the queue, execution order, node cache, events and history                 |
| ``nodes.py``    | what each node class does (``values.py``: what flows between nodes;        |
|                 | ``render.py``: the ffmpeg renderings of frames)                            |
| ``faults.py``   | fault injection: the kinds and their parameters                            |
| ``clients.py``  | the connected websockets                                                   |
| ``embedded.py`` | ``FakeComfyUI``: the server in a background thread, for tests              |
| ``__main__.py`` | the command line                                                           |

    python -m localdev.fake_comfyui --host 127.0.0.1 --port 8188 --input-dir D --output-dir D

prints one line when it is ready. In tests: ``FakeComfyUI(input_dir, output_dir).start()`` (a background
thread), then ``.url``, ``.set_fault(...)``, ``.stop()``.
"""

from localdev.fake_comfyui.embedded import FakeComfyUI
from localdev.fake_comfyui.faults import FAULT_KINDS
from localdev.fake_comfyui.identity import FAKE_VERSION
from localdev.fake_comfyui.server import FakeComfyServer

__all__ = ["FAKE_VERSION", "FAULT_KINDS", "FakeComfyServer", "FakeComfyUI"]
