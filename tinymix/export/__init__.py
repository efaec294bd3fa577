"""Taking an adapter elsewhere: Hugging Face PEFT's LoRA folder format.

    peft_export.py   the names and the format; a LoRA / AdaMix-LoRA adapter (a mixture merged first)
                     -> adapter_config.json + adapter_model.safetensors, the head in a file of its own
    peft_import.py   a PEFT LoRA for all-MiniLM-L6-v2 -> a tinymix adapter, everything checked first

    python3 -m tinymix export runs/lora/merged --format peft --out my-peft-lora
    python3 -m tinymix import-peft my-peft-lora --out runs/imported
"""
