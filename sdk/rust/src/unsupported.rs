//! Outside Linux the agent starts, logs that it cannot sample, and pushes nothing: programs
//! that use the SDK still build and run there.

pub(crate) mod sampler {
    #[derive(Debug, thiserror::Error)]
    pub(crate) enum StartError {
        #[error("another agent is already sampling this process")]
        AlreadyRunning,
        #[error("CPU sampling is implemented for Linux only")]
        Unsupported,
    }

    pub(crate) struct Sampler;

    impl Sampler {
        pub(crate) fn start(_hz: i32) -> Result<Sampler, StartError> {
            Err(StartError::Unsupported)
        }
        pub(crate) fn drain(&self, _f: impl FnMut(&[usize], u32)) {}
        pub(crate) fn take_dropped(&self) -> u64 {
            0
        }
        pub(crate) fn stop(&self) {}
    }
}

pub(crate) mod symbols {
    use std::sync::Arc;

    pub(crate) struct Symbolizer;

    impl Symbolizer {
        pub(crate) fn new() -> Self {
            Symbolizer
        }
        pub(crate) fn refresh(&mut self) {}
        pub(crate) fn name(&mut self, addr: usize, _return_address: bool) -> Arc<str> {
            format!("0x{addr:x}").into()
        }
    }
}
