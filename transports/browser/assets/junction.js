export async function connect() {}
