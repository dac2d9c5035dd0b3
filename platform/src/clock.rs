//! The hosts' one clock. The domain never reads time; hosts pass this in.

use domain::Timestamp;

pub fn now() -> Timestamp {
    std::time::SystemTime::now().into()
}
