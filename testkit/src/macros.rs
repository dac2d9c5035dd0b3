//! Macros for tests that run one contract against several adapters, or wrap
//! an adapter in a test double.

/// A contract written once and run against every adapter: a module per case,
/// holding a `#[tokio::test]` per adapter. The required adapter's opener gives
/// a fresh adapter; the optional one's is given the case's name and gives
/// `None` (and the test returns at once) when its service is not configured.
/// Each case's body sees the adapter as the name between the bars.
///
/// ```ignore
/// testkit::conformance! {
///     required postgres_adapter: postgres,
///     optional mongodb_adapter: mongodb;
///     round_trip: |store| round_trips(&*store).await;
/// }
/// ```
#[macro_export]
macro_rules! conformance {
    (
        required $required:ident: $open_required:ident,
        optional $optional:ident: $open_optional:ident;
        $($case:ident: |$adapter:ident| $body:expr;)*
    ) => {
        $(
            mod $case {
                use super::*;

                #[tokio::test]
                async fn $required() {
                    let $adapter = $open_required().await;
                    $body;
                }

                #[tokio::test]
                async fn $optional() {
                    let Some($adapter) = $open_optional(stringify!($case)).await else {
                        return;
                    };
                    $body;
                }
            }
        )*
    };
}

/// Implements the listed methods of a trait whose methods are all async and
/// return a `Result`, by handing each call on to `self.inner`: for a test double
/// that wraps a real adapter and changes only some of its calls. With
/// `before = hook;` first, every call awaits `self.hook("method_name")` before
/// it reaches `inner`, and fails with its error if it gives one.
///
/// ```ignore
/// impl EventStore for Wrapper {
///     testkit::forward_to_inner! {
///         fn stream_heads(&self) -> Result<Vec<(PostId, Version)>, StoreError>;
///         fn ping(&self) -> Result<(), StoreError>;
///     }
///     // ...the methods the wrapper changes, written out.
/// }
/// ```
#[macro_export]
macro_rules! forward_to_inner {
    (
        before = $before:ident;
        $(fn $method:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*
    ) => {
        $(
            async fn $method(&self $(, $arg: $ty)*) -> $ret {
                self.$before(stringify!($method)).await?;
                self.inner.$method($($arg),*).await
            }
        )*
    };
    ($(fn $method:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(
            async fn $method(&self $(, $arg: $ty)*) -> $ret {
                self.inner.$method($($arg),*).await
            }
        )*
    };
}
