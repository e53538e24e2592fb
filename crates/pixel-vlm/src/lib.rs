//! pixel-vlm: under construction.
