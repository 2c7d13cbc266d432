"""The remote side: talking to servers WanFit does not control, with the standard library only.

transfer  where a request may go, how much and how long it may read, server-chosen file names
client    a ComfyUI server's HTTP API (/prompt, /history, /view, /upload/image)
progress  following a prompt on /ws (polling /history where there is no websocket)
runpod    RunPod serverless (worker-comfyui): submit, poll, fetch the outputs
download  multi-GB model files: resumable, verified, never a wrong file under the final name
worker    the RunPod worker's start step: models on the volume, launch flags, extra_model_paths.yaml

It may import errors, units, models, workflows and (for the worker's launch flags) the planner.
"""
