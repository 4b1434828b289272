//! Native sampler of the Kiln Python SDK, imported as `_kiln_native` when installed.
//!
//! The `kiln` package drives it from its sampling thread (one `tick` per period, one `drain`
//! per upload) and falls back to its pure-Python sampler when this module is missing.

mod clock;
mod main_thread;
mod pacer;
mod sampler;
mod stacks;
mod tick_signal;

use pyo3::prelude::*;

#[pymodule]
fn _kiln_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<sampler::NativeSampler>()?;
    module.add_class::<sampler::Counters>()?;
    module.add_class::<pacer::StopSignal>()?;
    module.add_class::<tick_signal::TickHandler>()?;
    module.add_function(wrap_pyfunction!(tick_signal::signal_is_default, module)?)?;
    module.add("ABI_VERSION", 4)?;
    Ok(())
}
