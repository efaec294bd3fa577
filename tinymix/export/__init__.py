"""Taking an adapter elsewhere: Hugging Face PEFT's LoRA folder format, AdapterHub's adapter folder, a
whole transformers BertModel for the methods that change the base model's own weights, and the tiny GPT
as a transformers GPT2LMHeadModel.

    peft_export.py         the names and the format; a LoRA / AdaMix-LoRA adapter (a mixture merged first)
                           -> adapter_config.json + adapter_model.safetensors, the head in a file of its own
    peft_import.py         a PEFT LoRA for all-MiniLM-L6-v2 -> a tinymix adapter, everything checked first
    adapterhub_export.py   an adapter (ffn, houlsby, pfeiffer) / AdaMix-adapter (merged first) -> AdapterHub's
                           adapter_config.json + adapter.safetensors, each placement as the BnConfig that
                           computes the same function
    adapterhub_import.py   an AdapterHub bottleneck adapter for all-MiniLM-L6-v2 -> a tinymix adapter
    transformers_export.py full fine-tuning / BitFit of MiniLM -> a whole transformers BertModel folder
                           (config.json + model.safetensors) for AutoModel.from_pretrained; MiniLM itself
                           (the base the PEFT and AdapterHub folders load onto, no download needed)
    gpt_export.py          the tiny GPT, or an e2e run fine-tuned from it (its update folded into the
                           weights) -> a transformers GPT2LMHeadModel folder with its tokenizer, for
                           AutoModelForCausalLM / AutoTokenizer.from_pretrained

    python3 -m tinymix export runs/lora/merged --format peft --out my-peft-lora
    python3 -m tinymix import-peft my-peft-lora --out runs/imported
    python3 -m tinymix export runs/main/merged --format adapterhub --out my-adapter
    python3 -m tinymix import-adapterhub my-adapter --out runs/imported-adapter
    python3 -m tinymix export runs/full/merged --format transformers --out my-bert
    python3 -m tinymix export minilm-l6 --format transformers --out minilm
    python3 -m tinymix export data/tiny_gpt --format transformers --out my-gpt
"""
