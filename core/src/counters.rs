//! Counters declared once. [`counters!`](crate::counters!) turns one list of
//! documented fields into a plain struct, its names and help texts in order,
//! and conversions to and from an array in that order; the text report, the
//! JSON counters and metric names are all made from that one list.
//! [`Published`] is how an lcore hands its counters to the control thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares a counter set: `pub struct Name { /// doc \n field, ... }`.
///
/// Each field is a `u64` with its doc comment; the struct gets `FIELDS`,
/// `NAMES` (the field names), `HELP` (their first doc lines), `to_array`,
/// `from_array` and `add`.
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( #[doc = $doc:literal] $(#[doc = $more:literal])* $field:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $vis struct $name {
            $( #[doc = $doc] $(#[doc = $more])* pub $field: u64, )*
        }

        impl $name {
            /// Number of counters.
            pub const FIELDS: usize = [$(stringify!($field)),*].len();
            /// Their names, in declaration order.
            pub const NAMES: [&'static str; Self::FIELDS] = [$(stringify!($field)),*];
            /// What each counts (its doc comment's first line), in `NAMES` order.
            pub const HELP: [&'static str; Self::FIELDS] = [$($doc),*];

            /// As an array, in `NAMES` order.
            pub fn to_array(self) -> [u64; Self::FIELDS] {
                [$(self.$field),*]
            }

            /// From an array in `NAMES` order.
            pub fn from_array(a: [u64; Self::FIELDS]) -> Self {
                let [$($field),*] = a;
                $name { $($field),* }
            }

            /// Adds `o` into self, counter by counter.
            pub fn add(&mut self, o: &Self) {
                $( self.$field += o.$field; )*
            }

            /// `(name, value)` pairs, in `NAMES` order.
            pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
                Self::NAMES.into_iter().zip(self.to_array())
            }
        }
    };
}

/// Declares a label set: an enum whose variants each have a snake_case
/// label (`Variant => label,`), with `COUNT`, `ALL` (declaration order, which
/// is also the index of each in counter arrays: `v as usize`), `name()` and
/// `HELP` (the doc comments' first lines).
#[macro_export]
macro_rules! labels {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( #[doc = $doc:literal] $(#[doc = $more:literal])* $variant:ident => $label:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( #[doc = $doc] $(#[doc = $more])* $variant, )*
        }

        impl $name {
            /// Number of labels.
            pub const COUNT: usize = [$(stringify!($label)),*].len();
            /// Every one, in declaration order.
            pub const ALL: [$name; Self::COUNT] = [$($name::$variant),*];
            /// What each means (its doc comment's first line), in `ALL` order.
            pub const HELP: [&'static str; Self::COUNT] = [$($doc),*];

            /// The label in reports, JSON counters and metrics.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => stringify!($label), )*
                }
            }
        }
    };
}

/// `N` counters as one lcore publishes them: the owner stores (relaxed, no
/// read-modify-write), any thread loads. Cache-line aligned so that two
/// lcores' counters never share a line.
#[repr(align(64))]
pub struct Published<const N: usize> {
    values: [AtomicU64; N],
}

impl<const N: usize> Default for Published<N> {
    fn default() -> Self {
        Published { values: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl<const N: usize> Published<N> {
    /// Publishes `values` (called by the owning lcore only).
    pub fn publish(&self, values: &[u64; N]) {
        for (a, v) in self.values.iter().zip(values) {
            a.store(*v, Ordering::Relaxed);
        }
    }

    /// A snapshot (any thread).
    pub fn snapshot(&self) -> [u64; N] {
        std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    crate::counters! {
        /// Two counters.
        pub struct Two {
            /// The first.
            first,
            /// The second,
            /// on two lines.
            second,
        }
    }

    #[test]
    fn one_list_gives_names_help_and_arrays() {
        assert_eq!(Two::NAMES, ["first", "second"]);
        assert_eq!(Two::HELP, [" The first.", " The second,"]);
        let t = Two { first: 1, second: 2 };
        assert_eq!(Two::from_array(t.to_array()), t);
        let mut s = t;
        s.add(&t);
        assert_eq!(s.named().collect::<Vec<_>>(), [("first", 2), ("second", 4)]);
        let p = super::Published::<{ Two::FIELDS }>::default();
        p.publish(&t.to_array());
        assert_eq!(p.snapshot(), [1, 2]);
    }
}
