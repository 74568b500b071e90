//! Checks across objects: references that must resolve within the input.
