"""The formulas of docs/domain.md §4 as pure, versioned functions. Each returns an `Evaluated`
carrying its value with the formula's id and version, its parameters and a digest of its
inputs, so anyone can recompute it."""
