//! Proto schema toolkit (see issue 4).
