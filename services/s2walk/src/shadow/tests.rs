//! Tests of shadow stage-2 composition and invalidation.
