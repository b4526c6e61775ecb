//! Training: the loss functions every algorithm combines, the optimiser with its guards, and
//! checkpoints that resume exactly.

pub mod checkpoint;
pub mod losses;
pub mod optim;
pub mod spans;
