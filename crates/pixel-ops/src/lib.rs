//! pixel-ops: under construction.
