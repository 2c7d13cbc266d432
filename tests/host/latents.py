"""Read back latents written by ComfyUI's SaveLatent (safetensors with a 'latent_tensor')."""


def load_saved_latent(client, history_entry, node_id, download_dir):
    from safetensors.torch import load_file

    files = client.output_files(history_entry, node_id)
    assert len(files) == 1, f"expected one latent file from node {node_id}, outputs: {history_entry.get('outputs')}"
    path = client.download(files[0], download_dir)
    return load_file(str(path))["latent_tensor"]
