//! A stand-alone echo upstream for manual experiments and benchmarks:
//! `switchyard-upstream <name> <port>` serves features.v1 on 127.0.0.1:<port>, answering
//! with `model_version = <name>`, until killed.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(port)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: switchyard-upstream <name> <port>");
    };
    let upstream = testbed::upstream::Upstream::start_on(&name, port.parse()?).await?;
    println!("{} listening on 127.0.0.1:{}", upstream.name, upstream.port);
    std::future::pending::<()>().await;
    Ok(())
}
