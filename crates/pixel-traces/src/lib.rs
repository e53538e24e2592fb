//! pixel-traces: under construction.
