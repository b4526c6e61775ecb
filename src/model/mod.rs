//! Models: loading weights (GGUF, Hugging Face folders) and, as they land, the decoder, LoRA,
//! heads and generation that the model-bound operators run on a device thread.

pub mod gguf;
