//! Source checks (tidy).
