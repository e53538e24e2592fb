//! Evaluation for Pixel Reasoner (not built yet).
//!
//! This crate will hold loaders for V* Bench, TallyQA-Complex, InfographicsVQA (ANLS), MVBench and HR-Bench
//! in their official record formats, a runner that drives the policy through `pixel-ops` episodes, and a
//! report of accuracy and operation usage per benchmark.
