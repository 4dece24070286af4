# Stand-in for rust:<X.Y>-slim-bookworm: the public image's layout (toolchain under /usr/local,
# CARGO_HOME=/usr/local/cargo on PATH, gcc and libc6-dev for crates that build C), with this
# machine's toolchain copied in instead of one installed by rustup. Made by make-stand-ins.sh.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && chmod -R a+w /usr/local/cargo && rustc --version && cargo --version
