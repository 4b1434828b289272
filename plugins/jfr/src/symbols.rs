//! Names the JVM generates per run (lambda classes, reflection accessors, CGLIB proxies, native
//! libraries unpacked under random names) merged into one stable name each, so that the same
//! code keeps the same frame across restarts — the names Grafana Pyroscope gives them.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

struct Rule {
    pattern: Regex,
    replacement: &'static str,
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |pattern: &str, replacement: &'static str| Rule {
        pattern: Regex::new(pattern).expect("valid pattern"),
        replacement,
    };
    vec![
        // jdk/internal/reflect/GeneratedMethodAccessor31
        rule(
            r"^(jdk/internal/reflect/GeneratedMethodAccessor)[0-9]+$",
            "${1}_",
        ),
        // com/example/Service$$Lambda$669.0x0000000800fd7318, Fib$$Lambda.0x00007ffa600c4da0
        rule(
            r"^(.+\$\$Lambda)(?:\$?[0-9]*[./](?:0x)?[0-9a-f]+|[0-9]+)$",
            "${1}_",
        ),
        // libzstd-jni-1.5.1-16931311898282279136.so
        rule(
            r"^(?:\.?/tmp/)?libzstd-jni-[0-9]+\.[0-9]+\.[0-9]+-[0-9]+\.so(?: \(deleted\))?$",
            "libzstd-jni-_.so",
        ),
        // ./tmp/libamazonCorrettoCryptoProvider109b39cf33c563eb.so
        rule(
            r"^(?:\.?/tmp/)?(?:lib)?amazonCorrettoCryptoProvider(?:NativeLibraries\.)?[0-9a-f]{16}(?:/libcrypto|/libamazonCorrettoCryptoProvider)?\.so(?: \(deleted\))?$",
            "libamazonCorrettoCryptoProvider_.so",
        ),
        // libasyncProfiler-linux-x64-17b9a1d8156277a98ccc871afa9a8f69215f92.so
        rule(
            r"^(?:\.?/tmp/)?libasyncProfiler-(?:linux-arm64|linux-musl-x64|linux-x64|macos)-17b9a1d8156277a98ccc871afa9a8f69215f92\.so(?: \(deleted\))?$",
            "libasyncProfiler-_.so",
        ),
        // com/example/Foo$$EnhancerBySpringCGLIB$$3f1a2b
        rule(r"^(.+\$\$EnhancerBySpringCGLIB\$\$).*$", "${1}_"),
    ]
});

/// `symbol` with every generated part replaced by `_`.
pub fn merge_generated(symbol: &str) -> Cow<'_, str> {
    // Cheap pre-check: every rule needs one of these substrings.
    if !(symbol.contains("$$")
        || symbol.contains("GeneratedMethodAccessor")
        || symbol.contains(".so"))
    {
        return Cow::Borrowed(symbol);
    }
    let mut out = Cow::Borrowed(symbol);
    for rule in RULES.iter() {
        if let Cow::Owned(s) = rule.pattern.replace(&out, rule.replacement) {
            out = Cow::Owned(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::merge_generated as m;

    #[test]
    fn generated_names_merge() {
        assert_eq!(
            m("jdk/internal/reflect/GeneratedMethodAccessor31"),
            "jdk/internal/reflect/GeneratedMethodAccessor_"
        );
        assert_eq!(
            m("org/example/OrderService$$Lambda$669.0x0000000800fd7318"),
            "org/example/OrderService$$Lambda_"
        );
        assert_eq!(m("Fib$$Lambda.0x00007ffa600c4da0"), "Fib$$Lambda_");
        assert_eq!(m("Fib$$Lambda$12/0x0000000800c01234"), "Fib$$Lambda_");
        // As in the reference: a bare `$12` suffix is not a generated name it merges.
        assert_eq!(m("Fib$$Lambda$12"), "Fib$$Lambda$12");
        assert_eq!(
            m("libzstd-jni-1.5.1-16931311898282279136.so"),
            "libzstd-jni-_.so"
        );
        assert_eq!(
            m("./tmp/libamazonCorrettoCryptoProvider109b39cf33c563eb.so"),
            "libamazonCorrettoCryptoProvider_.so"
        );
        assert_eq!(
            m("com/x/Foo$$EnhancerBySpringCGLIB$$3f1a2b"),
            "com/x/Foo$$EnhancerBySpringCGLIB$$_"
        );
        assert_eq!(m("java/lang/Thread"), "java/lang/Thread");
        assert_eq!(m("run"), "run");
    }
}
