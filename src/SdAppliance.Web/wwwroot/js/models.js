// The Models page's uploads: model files of gigabytes go to /ui/uploads in chunks (PUT with Content-Range), not through
// the Blazor circuit. After a dropped connection or a server error, the upload asks the server how many bytes it has
// (GET) and continues from there. Progress and the outcome of each file are reported to the page (a .NET object).

const uploads = "/ui/uploads";
const chunkBytes = 8 * 1024 * 1024;
const attempts = 8;

/** Uploads the files chosen in the input element `input`; options: { kind, isPrivate, token }. */
export async function uploadFiles(input, options, page) {
    const files = Array.from(input?.files ?? []);
    for (const file of files) {
        await uploadFile(file, options, page);
    }
    if (input) input.value = "";
}

/** The names and sizes of the files chosen in `input`, for the page's list before the upload starts. */
export function chosenFiles(input) {
    return Array.from(input?.files ?? []).map(f => ({ name: f.name, size: f.size }));
}

async function uploadFile(file, options, page) {
    const headers = { "X-CSRF-TOKEN": options.token };
    let session;
    try {
        const start = await fetch(uploads, {
            method: "POST",
            headers: { ...headers, "Content-Type": "application/json" },
            body: JSON.stringify({ kind: options.kind, file_name: file.name, size: file.size, private: options.isPrivate }),
        });
        if (!start.ok) return await failed(page, file, await problem(start));
        session = await start.json();
    } catch (e) {
        return await failed(page, file, "the server cannot be reached: " + e.message);
    }

    let offset = session.received_bytes;
    let tries = 0;
    await page.invokeMethodAsync("UploadProgress", file.name, offset, file.size);
    while (true) {
        const end = Math.min(offset + chunkBytes, file.size);
        let answer = null;
        try {
            const response = await fetch(`${uploads}/${session.id}`, {
                method: "PUT",
                headers: { ...headers, "Content-Type": "application/octet-stream", "Content-Range": `bytes ${offset}-${end - 1}/${file.size}` },
                body: file.slice(offset, end),
            });
            if (response.ok || response.status === 409) {
                answer = await response.json();
            } else if (response.status < 500) {
                return await failed(page, file, await problem(response));
            }
        } catch {
            // A dropped connection: ask the server where it stands, below.
        }
        if (answer === null) {
            if (++tries > attempts) return await failed(page, file, "the connection dropped too often; choose the file again to continue");
            await new Promise(resolve => setTimeout(resolve, 300 * tries));
            answer = await where(session.id, headers);
            if (answer === null) continue;
        } else {
            tries = 0;
        }
        offset = answer.received_bytes;
        await page.invokeMethodAsync("UploadProgress", file.name, offset, file.size);
        if (answer.complete) {
            return await page.invokeMethodAsync("UploadDone", file.name, answer.model ?? file.name);
        }
    }
}

// Where the upload stands on the server; null when it cannot be asked now.
async function where(id, headers) {
    try {
        const response = await fetch(`${uploads}/${id}`, { headers });
        return response.ok ? await response.json() : null;
    } catch {
        return null;
    }
}

async function problem(response) {
    try {
        const body = await response.json();
        return body.detail ?? body.title ?? `the server answered ${response.status}`;
    } catch {
        return `the server answered ${response.status}`;
    }
}

function failed(page, file, message) {
    return page.invokeMethodAsync("UploadFailed", file.name, message);
}
