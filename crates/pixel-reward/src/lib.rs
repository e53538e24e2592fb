//! pixel-reward: under construction.
