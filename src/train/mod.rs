//! Training: the loss functions every algorithm combines (and, as they land, the optimiser, its
//! guards and checkpoints).

pub mod losses;
