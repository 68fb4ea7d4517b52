//! Tests of the crate as a whole: how its folders' files layer, and a term of a class
//! on the in-memory cloud.

mod layering;
mod term;
