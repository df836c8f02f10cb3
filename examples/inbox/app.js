// The page's own script: it asks its back end for the logged-in user's
// Herald token and hands it to the element, which does the rest.
fetch("/token")
  .then((response) => response.json())
  .then(({ token }) => {
    document.querySelector("herald-inbox").token = token;
  });
