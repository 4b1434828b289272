//! A descriptor with a future ABI version: the host must refuse it before calling anything.

use std::ffi::{c_char, c_void};

use kiln_plugin_api::abi::{self, ByteBuf, Descriptor};

unsafe extern "C" fn create(_: *const u8, _: usize, _: *mut *mut c_void, _: *mut ByteBuf) -> i32 {
    panic!("a refused plugin must never be called")
}
unsafe extern "C" fn destroy(_: *mut c_void) {}
unsafe extern "C" fn call(_: *mut c_void, _: *const u8, _: usize, _: *mut ByteBuf) -> i32 {
    panic!("a refused plugin must never be called")
}

static DESCRIPTOR: Descriptor = Descriptor {
    magic: abi::MAGIC,
    abi_version: abi::ABI_VERSION + 1,
    kind: abi::KIND_DECODER,
    name: c"future".as_ptr() as *const c_char,
    version: c"9.9.9".as_ptr() as *const c_char,
    create,
    destroy,
    call,
    free: abi::free_buf,
};

#[no_mangle]
pub extern "C" fn kiln_plugin_entry() -> *const Descriptor {
    &DESCRIPTOR
}
